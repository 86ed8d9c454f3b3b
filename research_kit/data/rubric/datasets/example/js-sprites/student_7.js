var dog = createSprite(200, 200);
dog.setAnimation("dog");
dog.scale = 0.5;
var bone = createSprite(300, 100);
bone.setAnimation("bone");
dog.x = dog.x + 5;

function draw() {
  background("white");
  if (keyDown("up")) {
    dog.y - 5;
  }
  drawSprites();
}
