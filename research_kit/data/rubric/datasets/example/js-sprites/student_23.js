var shark = createSprite(400, 200);
shark.setAnimation("shark");
shark.scale = 0.5;
shark.velocityX = -3;
var diver = createSprite(50, 200);
diver.setAnimation("diver");
diver.scale = 0.4;

function draw() {
  background("teal");
  if (shark.x < -60) {
    shark.x = 460;
    shark.y = randomNumber(50, 350);
  }
  if (diver.isTouching(shark)) {
    diver.setAnimation("diver_hurt");
  }
  drawSprites();
}
