var sun = createSprite(320, 60);
sun.setAnimation("sun");
sun.scale = 0.7;
var house = createSprite(200, 300);
house.setAnimation("house");

function draw() {
  background("skyblue");
  drawSprites();
}
